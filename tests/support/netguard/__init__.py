"""The network guard the tests install in-process and, through ``sitecustomize``, in every Python subprocess."""
