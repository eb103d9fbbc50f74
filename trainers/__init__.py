"""thoraxmae trainers package."""
