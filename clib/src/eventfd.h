/*
 * Kicks and drains of the eventfds a vchan shares with its peer, bounded in time whatever the
 * peer does to them (docs/security.md, "Shared eventfds").
 */
#ifndef KVC_EVENTFD_H
#define KVC_EVENTFD_H

/* Adds 1 to the counter. Returns 0, or -EAGAIN when it could not (the counter is saturated:
 * the reader has a wake-up pending anyway), or another -errno. Never sleeps more than ~20 ms. */
int kvc_eventfd_kick(int fd);

/* Consumes the counter. Returns 1 if there was an event, 0 if not, -errno on error. Never
 * sleeps more than ~20 ms. */
int kvc_eventfd_drain(int fd);

#endif
