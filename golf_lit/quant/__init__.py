"""golf-lit quant."""
