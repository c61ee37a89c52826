"""Ingestion of crawls, labelled sets and user reports."""
