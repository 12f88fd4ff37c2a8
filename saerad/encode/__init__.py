"""Training encoders for the book (self-supervised: :mod:`saerad.encode.ssl_encoder`)."""
