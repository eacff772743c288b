"""xasflow.inference"""
