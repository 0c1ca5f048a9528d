"""trackemb.embedding"""
