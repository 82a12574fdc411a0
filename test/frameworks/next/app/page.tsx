import { Counter, withState } from "./state";

export default withState(async () => <p>count: {new Counter().count}</p>);
