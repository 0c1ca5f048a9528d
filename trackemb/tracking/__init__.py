"""trackemb.tracking"""
