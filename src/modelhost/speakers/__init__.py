"""Speakers: enrollment (a job), the directory of enrolled people and their voiceprints in Qdrant."""
