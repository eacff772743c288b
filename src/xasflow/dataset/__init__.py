"""xasflow.dataset"""
