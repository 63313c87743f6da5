"""Contracts shared by both domains. Imports neither `domainfm.code` nor `domainfm.pathology`."""
