"""trackemb.flows"""
