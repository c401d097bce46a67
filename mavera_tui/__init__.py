"""mavera-tui: run work against the rate-limited, credit-billed Mavera API, and watch it."""

__version__ = "0.1.0"
