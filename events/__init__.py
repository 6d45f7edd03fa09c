"""The published event contract and the relay that puts every stored event on NATS."""
