"""What every layer needs to run: device choice, distributed set-up, safe stops on signals,
atomic writes, output-folder ownership and locks. Imports nothing of the package but errors."""
