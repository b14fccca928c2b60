"""golf-lit optim."""
