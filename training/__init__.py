"""Training, evaluation and export tools for bisenetv2_ros (imports the package, never the reverse)."""
