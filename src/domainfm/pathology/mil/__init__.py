"""pathology.mil stage."""
