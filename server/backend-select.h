/*
 * backend-select.h — choosing a backend device from a command-line spec
 * (`--backend NAME[:N]`), shared by copse run, copse bench and copse info.
 */
#ifndef COPSE_SERVER_BACKEND_SELECT_H
#define COPSE_SERVER_BACKEND_SELECT_H

#include "backend-impl.h"

/* The device of spec "NAME" (device 0) or "NAME:N". On failure prints one
 * clear message to stderr, starting with `who` ("copse run"): an unknown
 * name lists the backends built in; a backend without devices says why
 * (its "status_text") and lists the devices that exist; a bad index lists
 * the backend's devices. Returns NULL then. */
copse_backend_dev *copse__backend_select(const char *spec, const char *who);

/* The detail of a device's last failure (a kernel build log, a refused
 * allocation) from its backend's "dev_last_error", or "" if none. */
const char *copse__backend_dev_error(copse_backend_dev *dev);

/* Why a backend has no device (its "status_text"), or "". */
const char *copse__backend_status_text(copse_backend_reg *reg);

#endif /* COPSE_SERVER_BACKEND_SELECT_H */
