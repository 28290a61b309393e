/*
 * leech.c: the in-process half of lpm, loaded with ctypes from lpm/_native/.
 *
 * This file is a plain C shared library, not a Python extension module: it
 * exports a small C ABI whose every symbol starts with lpm_, and ctypes does
 * all of the setup.  The event sources, buffers and writer thread arrive with
 * the leech issue; today it only reports its ABI version, so that the build
 * and the loader are exercised on every supported CPython.
 *
 * ABI
 *   int lpm_abi_version(void)
 *       The version of this C ABI.  lpm/_native/__init__.py refuses a library
 *       whose version differs from the one it was written against.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#define LPM_EXPORT __attribute__((visibility("default")))

#define LPM_ABI_VERSION 1

LPM_EXPORT int lpm_abi_version(void) { return LPM_ABI_VERSION; }
