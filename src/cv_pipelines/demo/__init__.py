"""The synthetic demo data set the project generates for itself."""
