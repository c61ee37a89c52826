"""Offline evaluations on labelled folders: what the platform's choices are worth.

Everything here works on a folder of labelled photos (one sub-folder per
class), embeds it once (cached), and simulates the platform from embeddings:
no database, no queue rows.
"""
