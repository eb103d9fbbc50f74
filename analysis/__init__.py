"""thoraxmae analysis package."""
