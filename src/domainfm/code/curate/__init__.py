"""code.curate stage."""
