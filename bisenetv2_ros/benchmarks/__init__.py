"""Speed benchmarks that print figures: backends (`bisenetv2 benchmark`), several cameras, message conversion.

Run them through `bisenetv2 benchmark*` or `python -m bisenetv2_ros.benchmarks.<module>`; they export no names.
"""
