"""Read side: plain SQL over the projection tables; never loads aggregates."""
