/*-------------------------------------------------------------------------
 *
 * lab.h
 *	  The isolation lab (lab.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef DTX_LAB_H
#define DTX_LAB_H

extern void dtx_lab_define_gucs(void);

/* The canonical name of an isolation level; ERROR 22023 if unknown. */
extern const char *dtx_lab_isolation(const char *level);

#endif							/* DTX_LAB_H */
