"""thoraxmae datasets package."""
