"""Transports: they translate HTTP and GraphQL into domain calls and domain errors back."""
