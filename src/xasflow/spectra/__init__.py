"""xasflow.spectra"""
