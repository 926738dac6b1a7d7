"""KEMI routing for autoprov's Kamailio, loaded by app_python3 through kemi/handler.py."""
