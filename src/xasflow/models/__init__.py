"""xasflow.models"""
