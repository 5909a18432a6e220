"""Weight clustering (weight sharing): every weight one of a few values per column or tensor."""
