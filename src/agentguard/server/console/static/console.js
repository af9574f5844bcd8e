/* agentguard kill-switch console: the entry module.
 *
 * Plain browser JavaScript modules, no build step; each module holds one part of the page.
 * Every URL is relative to where the server is mounted. Every string that comes from a user or
 * an agent is put on the page as text (textContent, Text nodes, attributes), never parsed as HTML.
 */
import { setupKillForm, setupListActions } from "./actions.js";
import { renderActive } from "./active.js";
import { PROBE, Unreachable, call } from "./api.js";
import { setupDialog } from "./dialog.js";
import { setupFilter } from "./interventions.js";
import { setupReviveActions } from "./revives.js";
import { showSignIn } from "./session.js";
import { setupSignIn, start } from "./signin.js";
import { banner, setConnection } from "./status.js";
import { setupStopAll } from "./stopall.js";
import { setupTimelines } from "./timeline.js";
import { setupWebhooks } from "./webhooks.js";

setupSignIn();
setupKillForm();
setupListActions();
setupStopAll(renderActive);
setupReviveActions();
setupDialog();
setupFilter();
setupTimelines();
setupWebhooks();
// A module runs once the page is parsed: the elements above are all there.
call("GET", PROBE).then(
  (session) => {
    if (session && session.signed_in === false) showSignIn();
    else start(session);
  },
  (error) => {
    if (error instanceof Unreachable) {
      setConnection("unreachable");
      banner("error", "Cannot reach the agentguard server. Reload the page to try again.");
    }
    showSignIn();
  }
);
