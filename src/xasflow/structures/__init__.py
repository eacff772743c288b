"""xasflow.structures"""
