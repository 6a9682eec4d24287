"""The asyncio layer: the only code that awaits. It hosts the core and storage on one loop."""
