"""Export of networks and single ops to deployable formats."""
