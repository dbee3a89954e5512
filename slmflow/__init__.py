"""slmflow: agentic jobs on small language models, escalated to a large one only when they fail."""
