"""An impression's context vectors, shared by training and recommendation: the user's behaviour, the query tower."""
