/* chat.c — chat templates (placeholder until the chat work lands). */
#include "chat.h"
