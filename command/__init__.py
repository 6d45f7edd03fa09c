"""Write side: aggregates, commands and the application services that save their events."""
