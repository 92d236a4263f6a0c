"""Model weights: fetching the official ones with checksums, and building tiny ones offline.

Every stage keeps the real loading code for the real weights; ``ssrp models tiny`` writes small
random-weight models in the very same files and formats, so the demo and the tests run through the
same loading path with no network. Loading never touches the network.
"""
