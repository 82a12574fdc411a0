// A Server Component that tries to change state: it gets the documented error, and renders its message.
import { Counter, withState } from "../state";

export default withState(async () => {
  try {
    new Counter().count += 1;
    return <p>changed</p>;
  } catch (error) {
    return <p id="error">{(error as Error).message}</p>;
  }
});
