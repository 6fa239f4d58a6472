/* sampling.c — placeholder; the sampling work replaces it. */
