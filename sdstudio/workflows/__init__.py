"""Workflows: each turns a job config into requests, runs them through the engine, and writes records."""
