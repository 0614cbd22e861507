/* The manager's schema as an ordered list of migration steps. */
#ifndef FERRY_CENTER_SCHEMA_H
#define FERRY_CENTER_SCHEMA_H

extern const char *const schema_steps[];
extern const int schema_nsteps;

#endif
