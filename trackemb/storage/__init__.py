"""trackemb.storage"""
