"""golf-lit model."""
