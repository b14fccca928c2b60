"""golf-lit eval."""
