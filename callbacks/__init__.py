"""Lightning callbacks for golf-lit training: EMA, warmdown, wall-clock cap, compile priming, artifact export."""
