"""Roost's own wire protocol: framed MessagePack, pipelined requests, pushed deliveries."""
