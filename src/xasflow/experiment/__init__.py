"""xasflow.experiment"""
