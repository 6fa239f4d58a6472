/* kvcache.c — placeholder; the kvcache work replaces it. */
