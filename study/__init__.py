"""thoraxmae study package."""
