"""`tunesmith serve`: the HTTP app, its request queue and its page."""
