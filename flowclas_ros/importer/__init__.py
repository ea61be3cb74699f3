"""Importing the FlowCLAS authors' released models (``flowclas-import``)."""
